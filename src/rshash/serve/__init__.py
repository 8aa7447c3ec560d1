"""``rshash serve``: search an index in the browser.

:mod:`rshash.serve.engine` ranks (numpy and numba: the class filter, the distance
threshold, relevance feedback, paging) and keeps the served index current;
:mod:`rshash.serve.app` is the web app (FastAPI on uvicorn), its JSON API and the
page in ``static/`` that uses that API and nothing else. Only an uploaded query
needs torch, imported when the first upload arrives.
"""
