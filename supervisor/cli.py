"""The ``supervisor`` console command (pykern pkcli: supervisor/pkcli/*)."""

import sys

from pykern import pkcli


def main():
    return pkcli.main("supervisor")


if __name__ == "__main__":
    sys.exit(main())
