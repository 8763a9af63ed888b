using System.Net;
using System.Net.Sockets;
using FluxNative.Server;
using FluxNative.Testing;
using Xunit.Abstractions;

namespace FluxNative.Cli.Tests;

/// <summary>
/// <c>flux serve</c> failing well: a bad address, a port in use and a model that cannot load are one line on standard
/// error and a non-zero exit, not a stack trace, and not a server that stays up answering 503.
/// </summary>
public sealed class ServeCommandTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>A key in the environment, so that the server starts without --insecure-no-auth (and its warning).</summary>
    private static readonly Dictionary<string, string> WithKey = new() { ["FLUX_API_KEYS"] = "test-key-0123456789" };

    private string[] State => ["--database", temp.File("flux.db"), "--output-dir", temp.File("outputs"), "--demo-dir", temp.File("demo")];

    [Theory]
    [InlineData("notaurl", "flux: --urls: 'notaurl' is not an address to listen on; expected http://HOST:PORT, e.g. http://127.0.0.1:8080.")]
    [InlineData("ftp://127.0.0.1:21", "flux: --urls: 'ftp://127.0.0.1:21' is not an http:// or https:// address.")]
    [InlineData(";", "flux: --urls: give at least one address.")]
    public void A_bad_address_is_one_line_naming_urls(string urls, string message)
    {
        CliResult result = CliRunner.Run(["serve", "--demo", "--insecure-no-auth", "--urls", urls, .. State]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.StartsWith(message, Assert.Single(result.ErrorLines));
    }

    [Theory]
    [InlineData("--threads -1", "flux: --threads must be between 0 and 4096 (got -1).")]
    [InlineData("--min-side 32", "flux: --min-side must be between 64 and 16384 (got 32).")]
    [InlineData("--min-side 1024 --max-side 512", "flux: --min-side (1024) must not be above --max-side (512).")]
    [InlineData("--max-side 4000 --min-side 8000", "flux: --min-side (8000) must not be above --max-side (4000).")]
    [InlineData("--queue-size 0", "flux: --queue-size must be between 1 and 1000000 (got 0).")]
    [InlineData("--request-timeout soon", "flux: --request-timeout must be a number, not 'soon'.")]
    [InlineData("--public-url not/absolute", "flux: --public-url must be an absolute URL (got 'not/absolute').")]
    [InlineData("--webhook-concurrency 0", "flux: --webhook-concurrency must be between 1 and 10000 (got 0).")]
    [InlineData("--model-name flux-dev", "flux: --model-name: 'flux-dev' is not a model name: owner/name, each letters, digits, '.', '_' or '-'.")]
    public void Bad_settings_are_one_line_naming_the_option(string options, string message)
    {
        CliResult result = CliRunner.Run(["serve", "--demo", "--insecure-no-auth", .. options.Split(' '), .. State]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Equal(message, Assert.Single(result.ErrorLines).TrimEnd());
    }

    [Fact]
    public void A_port_in_use_is_one_line_and_exit_code_2()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;

        CliResult result = CliRunner.RunProcess(WithKey, ["serve", "--demo", "--urls", $"http://127.0.0.1:{port}", .. State]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.DoesNotContain("   at ", result.Error);
        Assert.StartsWith($"flux: Failed to bind to address http://127.0.0.1:{port}: address already in use.", Assert.Single(result.ErrorLines));
        Assert.Equal(string.Empty, result.Output);
    }

    [Fact]
    public async Task A_database_that_cannot_be_written_is_one_line_and_exit_code_2()
    {
        // A real read-only database: one the server made, then read-only (chmod, or chattr +i as root). Where neither
        // can be done, a folder in the database's place stands in (a database that cannot be opened).
        string folder = temp.File("data"), database = Path.Combine(folder, "flux.db");
        await FluxServer.Build(new FluxServerOptions
        {
            Demo = true, InsecureNoAuth = true, DatabasePath = database, OutputDirectory = temp.File("outputs"), DemoDirectory = temp.File("demo"),
        }).DisposeAsync();
        using ReadOnlyPaths? readOnly = ReadOnlyPaths.TryMake(folder, database);
        if (readOnly is null)
        {
            File.Delete(database);
            Directory.CreateDirectory(database);
        }

        output.WriteLine(readOnly is null ? "A folder in the database's place (no way to make a file read-only here)." : $"Read-only: {readOnly.How}");
        CliResult result = CliRunner.RunProcess(WithKey, ["serve", "--demo", "--urls", "http://127.0.0.1:0", .. State[2..], "--database", database]);

        output.WriteLine(result.Error);
        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.DoesNotContain("   at ", result.Error);
        Assert.StartsWith($"flux: Cannot use the database '{database}': ", Assert.Single(result.ErrorLines));
        Assert.Equal(string.Empty, result.Output);
    }

    [Fact]
    public void A_model_that_fails_to_load_stops_the_server_with_a_non_zero_exit()
    {
        string broken = temp.File("flux1-dev.safetensors");
        File.WriteAllText(broken, "not a checkpoint");

        CliResult result = CliRunner.RunProcess(WithKey,
            ["serve", "--transformer", broken, "--ae", broken, "--urls", "http://127.0.0.1:0", "--database", temp.File("flux.db"), "--output-dir", temp.File("outputs")]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.DoesNotContain("   at ", result.Error);
        Assert.StartsWith("flux: ", result.ErrorLines[^1]);
        Assert.Contains(broken, result.ErrorLines[^1]);
        // It did start (and said where) before the load failed in the background.
        Assert.StartsWith("listening on http://127.0.0.1:", Assert.Single(result.OutputLines));
    }

    [Fact]
    public void A_lora_that_does_not_fit_the_model_stops_the_server_naming_the_module()
    {
        string lora = temp.File("other-model.safetensors");
        new SafetensorsWriter()
            .Add("lora_unet_double_blocks_77_img_attn_qkv.lora_down.weight", new float[2 * 8], 2, 8)
            .Add("lora_unet_double_blocks_77_img_attn_qkv.lora_up.weight", new float[24 * 2], 24, 2)
            .Write(lora);

        CliResult result = CliRunner.RunProcess(WithKey,
            ["serve", "--demo", "--demo-dir", temp.File("demo"), "--lora", lora, "--urls", "http://127.0.0.1:0", "--database", temp.File("flux.db"), "--output-dir", temp.File("outputs")]);

        Assert.Equal(ExitCodes.BadInput, result.ExitCode);
        Assert.Contains("lora_unet_double_blocks_77_img_attn_qkv", result.ErrorLines[^1]);
    }
}
