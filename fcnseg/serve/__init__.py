"""`fcnseg serve`: a local web page to drop an image and see its segmentation, and the HTTP API behind it.

``create_app(predictor, ...)`` (in :mod:`fcnseg.serve.app`) builds the FastAPI app; the page is plain
HTML, CSS and JavaScript in ``static/``, shipped with the package (no CDN, no build step).
"""
