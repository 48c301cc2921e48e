"""HTTP front door: uploads, web page, docs and POST /analyze/."""
