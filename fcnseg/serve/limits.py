"""The server's default limits, in a module that imports nothing heavy so that `fcnseg serve --help` can show them."""

DEFAULT_MAX_UPLOAD_MB = 25  # MiB per image file
DEFAULT_MAX_PIXELS = 100_000_000  # a 12000x8000 scan; the server holds several copies of each admitted image
DEFAULT_WORKERS = 1
DEFAULT_QUEUE = 8
