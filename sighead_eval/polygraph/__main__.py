"""`python -m sighead_eval.polygraph`: LM-Polygraph's evaluation loop on the offline geography
questions (`geo_qa.main`)."""

from .geo_qa import main

main()
