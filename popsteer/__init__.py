"""PopSteer.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it,
so that torch's OpenMP threads, once loaded after this, sleep at a barrier instead of spinning.
This matters when another busy process shares the cores, e.g. a second job started from another
shell (the scheduler then shares the cores between the two sessions equally, whatever their nice
values). Seconds per SAE epoch on 2 cores, each case a fresh process, the second job an ml-100k
SASRec training in its own session:

| OMP_WAIT_POLICY | alone | beside the second job |
|---|---|---|
| default | 1.75 | 17.53 |
| PASSIVE | 1.80 | 2.30 |

(``bench/omp_wait.py``). It has no effect when torch was imported before popsteer: libgomp reads
the variable when it is loaded.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
