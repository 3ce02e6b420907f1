"""Serving: an analysed SAE behind Ray Serve and FastAPI (``popsteer serve``; docs/METHOD.md §13)."""
