import BatonCLI

#if canImport(Glibc)
import Glibc
#endif

exit(CLI.runFromMain(CommandLine.arguments))
