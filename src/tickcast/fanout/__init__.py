"""Fan-out: the hub that hands each published tick to every subscriber without
awaiting any (``hub``), and the connection limits (``limits``). Plain Python."""
