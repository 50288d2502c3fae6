import BatonCLI

#if canImport(Glibc)
import Glibc
#endif

exit(await CLI.main(CommandLine.arguments))
