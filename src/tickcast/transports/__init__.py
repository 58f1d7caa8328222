"""How the ``/ws/stream`` protocol reaches a socket: the protocol itself
(``session``: hello, replay, catch-up, live, close reasons), the frames built once
per tick (``frames``), and the transports: ``raw`` (a non-blocking socket, the fast
path of ``tickcast serve``) and ``asgi`` (Quart's websocket, under stock Hypercorn)."""
