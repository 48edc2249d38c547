"""An entry module that starts a thread as it is imported (as numpy's thread pools do)."""

import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def run(key, *args):
    time.sleep(3600)
