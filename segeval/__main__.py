from segeval.commands.app import main

main()
