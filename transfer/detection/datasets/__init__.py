"""The detection sets ring-train-net and the suites know by name (``builtin_sets.declared`` imports every
module here): each module writes its set on first use and declares it with ``builtin_sets.declare``, so a
new built-in set is one new file in this folder."""
