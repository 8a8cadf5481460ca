"""`python -m scripted_llm --script FILE`: run the scripted model server."""

import sys

from scripted_llm.server import main

sys.exit(main())
