"""The rebuild job's exit codes, one meaning each (the table is in the package docstring)."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_GATE = 4
EXIT_PUBLISH = 5
EXIT_NOTIFY = 6
EXIT_BUSY = 7
