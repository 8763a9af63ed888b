// The `flux` command. Everything happens in FluxCli, which the tests call in-process.
return FluxNative.Cli.FluxCli.Run(args, Console.Out, Console.Error);
