"""Run sushy-emulator with a plain request log and an optional fixed power delay.

Usage: python sushy_emulator.py SUSHY-EMULATOR-ARGUMENTS...

Environment:
  SUSHY_REQUEST_LOG  file that receives one line per HTTP request, in the
                     werkzeug access-log format, for example
                     127.0.0.1 - - [04/Dec/2026 17:00:00] "POST /redfish/v1/...Reset HTTP/1.1" 204 -
  SUSHY_POWER_DELAY  seconds before a power change of a fake-driver system
                     becomes visible, or "random" (the default) for
                     sushy-tools' own 1 to 11 s.
"""

import importlib.metadata
import logging
import os
import sys
import types

# The fake driver computes the time at which a power change becomes visible
# as int(time.time()) + random.randint(1, 11) in set_power_state(). The
# module-level name "random" is replaced below, which ties this file to the
# sushy-tools version that was read.
PATCHED_SUSHY_TOOLS = "2.2.0"


def set_power_delay(seconds):
    version = importlib.metadata.version("sushy-tools")
    if version != PATCHED_SUSHY_TOOLS:
        sys.exit(
            f"sushy_emulator.py: SUSHY_POWER_DELAY needs sushy-tools {PATCHED_SUSHY_TOOLS}, "
            f"found {version}; read fakedriver.set_power_state() and update the patch"
        )
    from sushy_tools.emulator.resources.systems import fakedriver

    fakedriver.random = types.SimpleNamespace(randint=lambda low, high: seconds)


def add_request_log(path):
    from werkzeug import serving

    # On POSIX, werkzeug wraps the request lines of every status but 200 in ANSI colour codes.
    serving._log_add_style = False

    def is_request_line(record):
        return record.levelno == logging.INFO and " - - [" in str(record.msg)

    request_log = logging.FileHandler(path)
    request_log.setFormatter(logging.Formatter("%(message)s"))
    request_log.addFilter(is_request_line)

    logger = logging.getLogger("werkzeug")
    logger.setLevel(logging.INFO)
    logger.addHandler(request_log)
    # werkzeug adds its own stderr handler only when the logger has none.
    logger.addHandler(logging.StreamHandler())


def main():
    # Only the --config argument configures the emulator.
    os.environ.pop("SUSHY_EMULATOR_CONFIG", None)

    delay = os.environ.get("SUSHY_POWER_DELAY", "random")
    if delay != "random":
        set_power_delay(int(delay))

    request_log = os.environ.get("SUSHY_REQUEST_LOG")
    if request_log:
        add_request_log(request_log)

    from sushy_tools.emulator import main as emulator

    sys.argv[0] = "sushy-emulator"
    return emulator.main()


if __name__ == "__main__":
    sys.exit(main())
