using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

// The demo's models are written once into one temp folder that every test shares, the timing tests (cancel within
// a step) read clocks, and the machine has few cores: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace FluxNative.Cli.Tests;

/// <summary>What one run of <c>flux</c> printed and returned.</summary>
internal sealed record CliResult(int ExitCode, string Output, string Error)
{
    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    public string[] OutputLines => Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
}

internal static partial class CliRunner
{
    /// <summary>Runs <c>flux</c> in this process, through the same entry point as the executable.</summary>
    public static CliResult Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = FluxCli.Run(args, output, error);
        return new CliResult(exitCode, output.ToString(), error.ToString());
    }

    /// <summary>
    /// Runs <c>flux</c> in this process as the executable does, with <paramref name="cancellationToken"/> in place of
    /// Ctrl-C; <paramref name="onError"/> sees standard error as it grows (to cancel at a given step), and
    /// <paramref name="errorIsTerminal"/> says whether standard error is to be taken for a terminal.
    /// </summary>
    public static CliResult Run(string[] args, CancellationToken cancellationToken, Action<string>? onError = null, bool errorIsTerminal = false)
    {
        using var output = new StringWriter();
        using var error = new WatchedWriter(onError);
        int exitCode = FluxCli.Run(args, new CliConsole(output, error, errorIsTerminal), cancellationToken);
        return new CliResult(exitCode, output.ToString(), error.ToString());
    }

    /// <summary>
    /// Runs the built <c>flux</c> in a child process, for what must not happen in the test process:
    /// loading another native library, which a process can do only once; a server's own console logs.
    /// </summary>
    public static CliResult RunProcess(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        using Process process = Start(environment, args);
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        WaitForExit(process, args);
        return new CliResult(process.ExitCode, output.Result, error.Result);
    }

    /// <summary>
    /// Runs the built <c>flux</c> in a child process and sends it SIGINT, as Ctrl-C does, once its standard error
    /// matches <paramref name="when"/>.
    /// </summary>
    public static async Task<CliResult> RunProcessAndInterruptAsync(System.Text.RegularExpressions.Regex when, params string[] args)
    {
        using Process process = Start(new Dictionary<string, string>(), args);
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        var error = new StringBuilder();
        Task reading = Task.Run(async () =>
        {
            var buffer = new char[256];
            int read;
            while ((read = await process.StandardError.ReadAsync(buffer)) > 0)
            {
                lock (error)
                {
                    error.Append(buffer, 0, read);
                }
            }
        });

        var clock = Stopwatch.StartNew();
        while (true)
        {
            lock (error)
            {
                if (when.IsMatch(error.ToString()))
                {
                    break;
                }
            }

            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new TimeoutException($"flux {string.Join(' ', args)} never wrote '{when}': {error}");
            }

            await Task.Delay(20);
        }

        Assert.Equal(0, Kill(process.Id, SigInt));
        WaitForExit(process, args);
        await reading;
        return new CliResult(process.ExitCode, await output, error.ToString());
    }

    private const int SigInt = 2;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private static Process Start(IReadOnlyDictionary<string, string> environment, string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "flux.dll"));
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        foreach ((string name, string value) in environment)
        {
            start.Environment[name] = value;
        }

        return Process.Start(start)!;
    }

    private static void WaitForExit(Process process, string[] args)
    {
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill();
            throw new TimeoutException($"flux {string.Join(' ', args)} did not finish in 60 s");
        }
    }

    /// <summary>A StringWriter that shows what it holds to a callback after every write.</summary>
    private sealed class WatchedWriter(Action<string>? onWrite) : StringWriter
    {
        public override void Write(char value)
        {
            base.Write(value);
            onWrite?.Invoke(ToString());
        }

        public override void Write(string? value)
        {
            base.Write(value);
            onWrite?.Invoke(ToString());
        }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            onWrite?.Invoke(ToString());
        }
    }
}
