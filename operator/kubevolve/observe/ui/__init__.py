"""`kubevolve ui`: a live, read-only web browser of the runs in a store (app.py; the data from live.py and
views.py; the page in static/). Starlette and uvicorn are imported only here, never by the rest of kubevolve."""
