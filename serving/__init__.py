"""Real-time REST scoring (Litestar)."""
