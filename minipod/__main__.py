from minipod.cli import entry

entry()
