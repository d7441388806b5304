"""`fcnseg serve`: a local web page to drop images and see their segmentation, and an HTTP API (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
from pathlib import Path

from fcnseg.errors import ConfigError
from fcnseg.files import format_bytes, parse_bytes
from fcnseg.inference.predictor import DEFAULT_MAX_MEMORY
from fcnseg.inference.runtime import RUNTIME_HELP, RUNTIMES
from fcnseg.precision import PRECISIONS
from fcnseg.serve.limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE, DEFAULT_WORKERS

log = logging.getLogger("fcnseg.serve")



def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web page and HTTP API: drop an image, see its segmentation",
        description="Serves a page (drag and drop images, overlay, legend with class areas, downloads) and "
        "an HTTP API (POST /api/predict, GET /api/model, GET /healthz; its OpenAPI description at /openapi.json, "
        "no /docs page: Swagger UI would load from a CDN). Requests are "
        "queued to one model instance; a full queue answers 503. Uploads are held in memory only. "
        "Needs the serve extra: pip install 'fcnseg[serve]'.",
    )
    p.add_argument("checkpoint", type=Path,
                   help="model checkpoint (fcnseg, pytorch-fcn .pth or .caffemodel) or an fcnseg .onnx (fp32 or int8)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; another address exposes the "
                        "server, which has no authentication, to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help="images segmented at once, sharing one model (default %(default)s)")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                   help="requests that may wait for a worker; beyond, 503 (default %(default)s)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest image file in MiB, refused with 413 while it arrives (default {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels than this with 413 (default {DEFAULT_MAX_PIXELS:,}; 0 = no limit)")
    p.add_argument(
        "--max-memory",
        default=format_bytes(DEFAULT_MAX_MEMORY).replace(" ", ""),
        help="memory for weights + one forward; larger images are tiled, as in predict (default %(default)s)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="forward precision (default: auto)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ... (default: auto)")
    ls = p.add_argument_group("Label Studio ML backend (docs/annotations.md)")
    ls.add_argument("--label-studio", action="store_true",
                    help="serve Label Studio's ML backend protocol (GET /health, POST /setup, /predict, /webhook) instead of "
                         "the page: pre-annotations as brush masks or polygons, by the project's labelling config")
    ls.add_argument("--label-studio-root", type=Path, metavar="DIR",
                    help="Label Studio's local-files document root (LOCAL_FILES_DOCUMENT_ROOT): a task's local-files "
                         "URL ?d=PATH is read as DIR/PATH")
    ls.add_argument("--label-studio-url", metavar="URL",
                    help="Label Studio's address (default $LABEL_STUDIO_URL), for images it serves itself (uploads)")
    ls.add_argument("--label-studio-token", metavar="TOKEN",
                    help="API token sent with those downloads (default $LABEL_STUDIO_API_KEY)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=RUNTIME_HELP + " (serve times a 500x500 image: no input is known before the first request)")
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_args(args: argparse.Namespace) -> int:
    """Validate the numbers; returns ``--max-memory`` in bytes."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.queue < 0:
        raise ConfigError(f"--queue must be 0 or more, got {args.queue}")
    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.max_pixels < 0:
        raise ConfigError(f"--max-pixels must be 0 (no limit) or more, got {args.max_pixels}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must lie in 0..65535, got {args.port}")
    try:
        return parse_bytes(args.max_memory)
    except ValueError as e:
        raise ConfigError(f"--max-memory: {e}") from e


def run(args: argparse.Namespace) -> int:
    max_memory = check_args(args)
    try:
        import uvicorn

        from fcnseg.serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"fcnseg serve needs FastAPI, uvicorn and python-multipart ({e}); pip install 'fcnseg[serve]'") from e
    from fcnseg.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, runtime=args.runtime, device=args.device, precision=args.precision,
                                          max_memory=max_memory)
    log.info("%s: %s", args.checkpoint, predictor.describe())
    if args.label_studio:
        from fcnseg.annotations.label_studio_backend import Backend, create_backend_app

        app = create_backend_app(Backend(predictor, root=args.label_studio_root, url=args.label_studio_url,
                                         token=args.label_studio_token, model_version=args.checkpoint.name,
                                         max_pixels=args.max_pixels or None))
        log.info("Label Studio ML backend: connect it in the project's Settings > Model as http://%s:%d",
                 args.host, args.port)
    else:
        app = create_app(
            predictor,
            model_name=args.checkpoint.name,
            workers=args.workers,
            queue_size=args.queue,
            max_upload_bytes=int(args.max_upload_mb * 1024**2),
            max_pixels=args.max_pixels or None,
        )
    if not is_loopback(args.host):
        log.warning("listening on %s: the page and API are reachable from other machines, without authentication "
                    "(the default, 127.0.0.1, keeps them to this one)", args.host)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=10,  # Ctrl-C: finish the forwards under way, then stop
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down on SIGTERM as on Ctrl-C, then re-raises the signal to the handler it found: with the
    # default one the process died with 143 and no "stopped". This handler ends it as Ctrl-C does, with 0.
    previous = signal.signal(signal.SIGTERM, _stop_as_ctrl_c)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once it has shut down cleanly
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("stopped")
    return 0


def _stop_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt
