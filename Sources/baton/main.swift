import BatonCLI

#if canImport(Glibc)
import Glibc
#endif

// Before anything else: a stop signal that arrives while the process starts waits for the
// server instead of killing the process (commands that do not serve release it at once).
CLI.holdStopSignals()
exit(await CLI.main(CommandLine.arguments))
