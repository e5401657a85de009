"""Cut-out quality against true alpha mattes: the matting metrics (:mod:`app.quality.metrics`), the
scoring of one image and the gate (:mod:`app.quality.score`), the table (:mod:`app.quality.report`).
``make quality`` (benchmarks/quality.py) runs them on the AM-2k set; tests/test_quality.py tests them.
No Flask; the service never imports them (the metrics need scipy and OpenCV: the dev extras)."""
