from segeval.cli import main

main()
