"""Where ticks come from: the built-in simulator (``simulator`` is the plain market
model, ``simulated`` the task that runs it on a timer) and ``ingest`` (ticks posted
by an external simulation). A source only ever calls ``Producer.produce``."""
