"""The command line and its views: argparse, run/stop/rm, ps/get/inspect, describe, exec."""
