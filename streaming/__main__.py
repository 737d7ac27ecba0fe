"""`python -m streaming worker` starts a stream worker (any Faust command works).

The worker runs on uvloop when it is installed (it is with the streaming extra): Faust's
per-event overhead is mostly event-loop work, which uvloop does faster.
"""

import importlib.util
import sys

if __name__ == "__main__":
    if importlib.util.find_spec("uvloop") is not None and "--loop" not in sys.argv:
        import mode.loop

        mode.loop.use("uvloop")
    from streaming.app import create_app
    from streaming.settings import StreamSettings

    create_app(StreamSettings.from_env()).main()
