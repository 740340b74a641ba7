from minipod.cli.cli import entry

entry()
