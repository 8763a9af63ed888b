using BenchmarkDotNet.Running;

// Run with: dotnet run -c Release --project benchmarks/FluxNative.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(FluxNative.Benchmarks.InteropBenchmarks).Assembly).Run(args);
