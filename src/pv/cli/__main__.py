from pv.cli import main

main()
