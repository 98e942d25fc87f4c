"""Operations: running the bridge and looking after it.

Owns ``bridge serve`` (``service``: intake, pipeline and sinks in their processes), the
counters and positions ``bridge status`` shows (``status``), the deployment check
(``doctor``), the integrity check and salvage (``fsck``) and the operator's inbox of mail
no parser wanted (``inbox``).

It may import every stage below it (intake, pipeline, trust, journal, sinks) and the
ground; never the web or the CLI.
"""
