"""Sums GPU kernel time by kernel name in two Chrome traces (ours, the peer's) and prints the
largest differences: where one implementation spends device time that the other does not."""
import json, sys
from collections import defaultdict


def kernels(path):
    totals, counts = defaultdict(float), defaultdict(int)
    for e in json.load(open(path))["traceEvents"]:
        if e.get("cat") == "kernel" and "dur" in e:
            totals[e["name"][:110]] += e["dur"] / 1000.0
            counts[e["name"][:110]] += 1
    return totals, counts


(ours, n_ours), (theirs, n_theirs) = kernels(sys.argv[1]), kernels(sys.argv[2])
print(f"total kernel ms: ours {sum(ours.values()):.1f}, peer {sum(theirs.values()):.1f}; "
      f"kernels: ours {sum(n_ours.values())}, peer {sum(n_theirs.values())}")
names = set(ours) | set(theirs)
rows = sorted(names, key=lambda k: -abs(ours.get(k, 0) - theirs.get(k, 0)))
for k in rows[:25]:
    print(f"{ours.get(k, 0):9.2f} ms ({n_ours.get(k, 0):4d})  {theirs.get(k, 0):9.2f} ms ({n_theirs.get(k, 0):4d})  {k}")
