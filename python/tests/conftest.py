import os
import sys

# the SDK from this tree, not an installed one
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
