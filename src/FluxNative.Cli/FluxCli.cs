using System.CommandLine;
using System.CommandLine.Parsing;
using FluxNative.Interop;

namespace FluxNative.Cli;

/// <summary>Exit codes of the <c>flux</c> command.</summary>
public static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Success = 0;

    /// <summary>Something went wrong that is not the caller's input: the native library, a bug.</summary>
    public const int Failure = 1;

    /// <summary>Bad usage or bad input: unknown options, a bad value, a missing or corrupt file, an unsupported model.</summary>
    public const int BadInput = 2;

    /// <summary>Stopped by Ctrl-C (SIGINT) or SIGTERM through the command's cancellation token: 128 + SIGINT, as shells report it.</summary>
    public const int Cancelled = 130;
}

/// <summary>
/// Where a command writes: results on <see cref="Out"/> (and nothing else, so that it can be piped), everything
/// for people on <see cref="Error"/>: progress, notes, warnings and errors.
/// </summary>
/// <param name="Out">Standard output: results only (file paths, ids, JSON).</param>
/// <param name="Error">Standard error: progress, notes, warnings, errors.</param>
/// <param name="ErrorIsTerminal">Whether <see cref="Error"/> is a terminal, where progress is a live bar.</param>
internal sealed record CliConsole(TextWriter Out, TextWriter Error, bool ErrorIsTerminal = false)
{
    /// <summary>A line for people, on standard error.</summary>
    public void Note(string line) => Error.WriteLine(line);

    /// <summary>Something the user should know that does not stop the command: <c>flux: warning: …</c> on standard error.</summary>
    public void Warn(string message) => Error.WriteLine($"flux: warning: {message}");
}

/// <summary>
/// The <c>flux</c> command line: parses, dispatches to a command, and turns failures into one line
/// on standard error and an exit code. Callable in-process with any writers (the tests do).
/// </summary>
public static class FluxCli
{
    /// <summary>How long a command has to stop after Ctrl-C before it is abandoned (a transformer block, on a slow CPU).</summary>
    internal static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Runs <c>flux</c> with <paramref name="args"/>, writing to the given writers, and returns the exit code.</summary>
    public static int Run(IReadOnlyList<string> args, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(error);
        bool terminal = ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected;
        return Run(args, new CliConsole(output, error, terminal), CancellationToken.None);
    }

    /// <summary>
    /// Runs <c>flux</c>; <paramref name="cancellationToken"/> (besides Ctrl-C and SIGTERM) cancels a running command,
    /// which then exits with <see cref="ExitCodes.Cancelled"/>.
    /// </summary>
    internal static int Run(IReadOnlyList<string> args, CliConsole console, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(console);
        TextWriter error = console.Error;

        RootCommand root = CreateRootCommand(console);
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && parsed.Action is not VersionReport.Action)
        {
            return ReportParseErrors(parsed, error);
        }

        var configuration = new InvocationConfiguration
        {
            Output = console.Out,
            Error = error,
            // Failures are reported below, as one line; a stack trace is only for bugs.
            EnableDefaultExceptionHandler = false,
            // Ctrl-C and SIGTERM cancel the token of an asynchronous command (generate, serve), which stops and cleans up.
            ProcessTerminationTimeout = StopTimeout,
        };

        try
        {
            int code = parsed.InvokeAsync(configuration, cancellationToken).GetAwaiter().GetResult();
            if (code == ExitCodes.Cancelled)
            {
                // The command did not stop in time and was abandoned, its progress bar with it: show the cursor it hid.
                if (console.ErrorIsTerminal)
                {
                    error.Write("\u001b[?25h");
                }

                error.WriteLine("flux: cancelled (the command did not stop in time)");
            }

            return code;
        }
        catch (OperationCanceledException)
        {
            error.WriteLine("flux: cancelled");
            return ExitCodes.Cancelled;
        }
        catch (FluxNativeLoadException e)
        {
            error.WriteLine($"flux: {OneLine(e.Message)}");
            return ExitCodes.Failure;
        }
        catch (FluxNativeException e)
        {
            error.WriteLine($"flux: {OneLine(e.Message)}");
            return IsInputError(e.Code) ? ExitCodes.BadInput : ExitCodes.Failure;
        }
        catch (GenerationRequestException e)
        {
            error.WriteLine($"flux: {OneLine(GenerateCommand.DescribeRequestError(e))}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is CliInputException or InvalidDataException)
        {
            error.WriteLine($"flux: {OneLine(e.Message)}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"flux: {OneLine(e.Message)}");
            return ExitCodes.Failure;
        }
        catch (Exception e)
        {
            // Not an expected failure but a bug: the stack trace is what a bug report needs.
            error.WriteLine($"flux: internal error: {e}");
            return ExitCodes.Failure;
        }
    }

    /// <summary>The command tree. Each command's handler is a thin call into a service.</summary>
    internal static RootCommand CreateRootCommand(CliConsole console)
    {
        var root = new RootCommand("FluxNative: FLUX.1 text-to-image on a C++/CUDA engine.");
        foreach (VersionOption version in root.Options.OfType<VersionOption>())
        {
            version.Action = new VersionReport.Action(console);
        }

        root.Subcommands.Add(InspectCommand.Create(console));
        root.Subcommands.Add(TinyModelCommand.Create(console));
        root.Subcommands.Add(InfoCommand.Create(console));
        root.Subcommands.Add(ForwardCommand.Create(console));
        root.Subcommands.Add(GenerateCommand.Create(console));
        root.Subcommands.Add(EncodeCommand.Create(console));
        root.Subcommands.Add(TokenizeCommand.Create(console));
        root.Subcommands.Add(ServeCommand.Create(console));
        root.Subcommands.Add(BenchCommand.Create(console));
        root.Subcommands.Add(BuildCommand.Create(console));
        return root;
    }

    /// <summary>The command tree writing to <paramref name="output"/> (and standard error), for tools that list it.</summary>
    public static RootCommand CreateRootCommand(TextWriter output) => CreateRootCommand(new CliConsole(output, Console.Error));

    /// <summary>Statuses that mean the input (a path, a file, a choice of model) is at fault.</summary>
    internal static bool IsInputError(FluxStatus code) =>
        code is FluxStatus.InvalidArgument or FluxStatus.Io or FluxStatus.Format or FluxStatus.NotFound or FluxStatus.Unsupported;

    /// <summary>
    /// One line per error, naming the option at fault. A bad value is its own line and nothing more; a usage error
    /// (an unknown option or command, a missing argument) adds the line that says where the usage is.
    /// </summary>
    private static int ReportParseErrors(ParseResult parsed, TextWriter error)
    {
        bool usage = false;
        foreach (ParseError parseError in parsed.Errors)
        {
            string message = OneLine(parseError.Message);
            if (OptionOf(parseError.SymbolResult) is { } option)
            {
                if (!message.Contains(option.Option.Name, StringComparison.Ordinal))
                {
                    message = $"{option.Option.Name}: {message}";
                }
            }
            else
            {
                usage = true;
            }

            error.WriteLine($"flux: {message}");
        }

        if (usage)
        {
            string command = parsed.CommandResult.Command is RootCommand ? "flux" : $"flux {parsed.CommandResult.Command.Name}";
            error.WriteLine($"Run '{command} --help' for usage.");
        }

        return ExitCodes.BadInput;
    }

    private static OptionResult? OptionOf(SymbolResult? symbol) => symbol switch
    {
        OptionResult option => option,
        ArgumentResult { Parent: OptionResult option } => option,
        _ => null,
    };

    /// <summary>Some messages list their choices on lines of their own; one line per error reads better.</summary>
    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}

/// <summary>Input the command line accepted but the command cannot use; reported as one line, exit code 2.</summary>
internal sealed class CliInputException(string message) : Exception(message);
