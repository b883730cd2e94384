from demolimiter.launch import main

main()
