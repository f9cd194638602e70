import sys

from loadtest.faults.runner import main

sys.exit(main())
