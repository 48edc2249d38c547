"""A managed `command` process that answers each call with its pid (forsetictl.serve)."""

import os

import forsetictl

forsetictl.serve(lambda payload: b"%d" % os.getpid())
