"""The web face, ``bridge web``: the journal read over HTTP.

Owns the ASGI app (``app``): the datagrepper-compatible history API (``history``), the live
page (``page``, ``static/``) and its Server-Sent Events (``streams``), HTTP push with bearer
tokens (``push``, ``tokens``), ``/metrics`` (``metrics``) and the HTTP protocol's limits
(``protocol``).

It may import the journal, the pipeline's body rules and schemas (a push is held to a
parser's contract), the operators' status report and the ground; never a sink or the CLI.
"""
