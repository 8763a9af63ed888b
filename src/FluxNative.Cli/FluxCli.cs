using System.CommandLine;
using FluxNative.Interop;

namespace FluxNative.Cli;

/// <summary>Exit codes of the <c>flux</c> command.</summary>
public static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Success = 0;

    /// <summary>Something went wrong that is not the caller's input: the native library, a bug.</summary>
    public const int Failure = 1;

    /// <summary>Bad usage or bad input: unknown options, a missing or corrupt file, an unsupported model.</summary>
    public const int BadInput = 2;
}

/// <summary>
/// The <c>flux</c> command line: parses, dispatches to a command, and turns failures into one line
/// on standard error and an exit code. Callable in-process with any writers (the tests do).
/// </summary>
public static class FluxCli
{
    /// <summary>Runs <c>flux</c> with <paramref name="args"/>, writing to the given writers, and returns the exit code.</summary>
    public static int Run(IReadOnlyList<string> args, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);

        RootCommand root = CreateRootCommand(output);
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var parseError in parsed.Errors)
            {
                // Some parser messages list their choices on lines of their own; one line per error reads better.
                string message = string.Join(' ', parseError.Message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
                error.WriteLine($"flux: {message}");
            }

            string command = parsed.CommandResult.Command is RootCommand ? "flux" : $"flux {parsed.CommandResult.Command.Name}";
            error.WriteLine($"Run '{command} --help' for usage.");
            return ExitCodes.BadInput;
        }

        var configuration = new InvocationConfiguration
        {
            Output = output,
            Error = error,
            // Failures are reported below, as one line; a stack trace is only for bugs.
            EnableDefaultExceptionHandler = false,
        };

        try
        {
            return parsed.Invoke(configuration);
        }
        catch (FluxNativeLoadException e)
        {
            error.WriteLine($"flux: {e.Message}");
            return ExitCodes.Failure;
        }
        catch (FluxNativeException e)
        {
            error.WriteLine($"flux: {e.Message}");
            return IsInputError(e.Code) ? ExitCodes.BadInput : ExitCodes.Failure;
        }
        catch (Exception e) when (e is CliInputException or GenerationRequestException)
        {
            error.WriteLine($"flux: {e.Message}");
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"flux: {e.Message}");
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
    public static RootCommand CreateRootCommand(TextWriter output)
    {
        var root = new RootCommand("FluxNative: FLUX.1 text-to-image on a C++/CUDA engine.");
        root.Subcommands.Add(InspectCommand.Create(output));
        root.Subcommands.Add(TinyModelCommand.Create(output));
        root.Subcommands.Add(InfoCommand.Create(output));
        root.Subcommands.Add(ForwardCommand.Create(output));
        root.Subcommands.Add(GenerateCommand.Create(output));
        root.Subcommands.Add(EncodeCommand.Create(output));
        root.Subcommands.Add(TokenizeCommand.Create(output));
        root.Subcommands.Add(ServeCommand.Create(output));
        return root;
    }

    /// <summary>Statuses that mean the input (a path, a file, a choice of model) is at fault.</summary>
    internal static bool IsInputError(FluxStatus code) =>
        code is FluxStatus.InvalidArgument or FluxStatus.Io or FluxStatus.Format or FluxStatus.NotFound or FluxStatus.Unsupported;
}

/// <summary>Input the command line accepted but the command cannot use; reported as one line, exit code 2.</summary>
internal sealed class CliInputException(string message) : Exception(message);
