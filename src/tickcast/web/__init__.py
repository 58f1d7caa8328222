"""The HTTP side: the Quart-Trio app and its routes (``app``), the listener of
``tickcast serve`` that splits ``/ws/stream`` from everything else (``frontdoor``),
and the one module that touches Hypercorn internals (``hypercorn_bridge``)."""
