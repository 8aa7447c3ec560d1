"""``rshash serve``: search an index in the browser.

The archive's one query path ranks (:mod:`rshash.archive.query`: the class
filter, the distance threshold, relevance feedback, paging) and
:mod:`rshash.archive.live` keeps the served index current; :mod:`rshash.serve.app`
is the web app (FastAPI on uvicorn), its JSON API and the
page in ``static/`` that uses that API and nothing else. Only an uploaded query
needs torch, imported when the first upload arrives.
"""
