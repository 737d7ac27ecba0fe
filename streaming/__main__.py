"""`python -m streaming worker` starts a stream worker (any Faust command works)."""

from streaming.app import app

if __name__ == "__main__":
    app.main()
