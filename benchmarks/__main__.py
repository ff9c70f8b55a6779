import sys

if sys.argv[1:2] == ["train-step"]:
    from benchmarks.train_step import main

    raise SystemExit(main(sys.argv[2:]))
from benchmarks.run import main

raise SystemExit(main())
