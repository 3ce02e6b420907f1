"""PopSteer.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it,
so that torch's OpenMP threads, once loaded after this, sleep at a barrier instead of spinning.
This matters when another busy process shares the cores. Measured on 2 cores, with a second
training job running at nice 19, over 3 SAE epochs on ml-100k:

| OMP_WAIT_POLICY | alone | with the second job |
|---|---|---|
| default | 1.14 s an epoch | 15 s an epoch |
| PASSIVE | 1.14 s an epoch | 1.6 s an epoch |

(``bench/omp_wait.py``). It has no effect when torch was imported before popsteer: libgomp reads
the variable when it is loaded.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
