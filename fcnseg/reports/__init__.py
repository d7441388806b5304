"""What a person reads to see where a model fails: confusion heatmap, per-class IU bars, worst/best gallery, per-image CSV, index.html.

One module per picture or file (``confusion``, ``classes``, ``gallery``, ``per_image``, ``html``);
``evaluation_report`` writes them all for ``fcnseg eval --report``. matplotlib is imported inside
the drawing functions only, so importing this package costs nothing.
"""
