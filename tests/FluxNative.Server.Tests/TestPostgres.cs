using System.Diagnostics;
using System.Security.Cryptography;
using Npgsql;
using Xunit.Sdk;

namespace FluxNative.Server.Tests;

/// <summary>
/// The PostgreSQL server the tests use: the one <c>FLUX_TEST_POSTGRES</c> names (a <c>postgres://</c> address of a
/// superuser, as <c>tools/postgres/test-cluster.sh</c> prints it; ./test.sh and .ci/run start that throwaway cluster and
/// set it). Each test gets a database of its own, dropped afterwards. Without the variable the PostgreSQL cases are
/// skipped, saying why (<see cref="PostgresDataAttribute"/>, <see cref="PostgresFactAttribute"/>).
/// </summary>
internal sealed class TestPostgres : IDisposable
{
    /// <summary>The variable that names the server.</summary>
    public const string Variable = "FLUX_TEST_POSTGRES";

    /// <summary>The variable with the command that controls the server (append <c>stop -m immediate</c> or <c>start</c>).</summary>
    public const string ControlVariable = "FLUX_TEST_POSTGRES_CTL";

    private readonly string admin;

    private TestPostgres(string admin, string name)
    {
        this.admin = admin;
        Name = name;
        var address = new UriBuilder(admin) { Path = "/" + name };
        Address = address.Uri.ToString();
    }

    /// <summary>The server's address, or null when none is given.</summary>
    public static string? ServerAddress => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } value ? value : null;

    /// <summary>Why the PostgreSQL cases are skipped, or null when they run.</summary>
    public static string? SkipReason => ServerAddress is null
        ? $"no PostgreSQL server for the tests: {Variable} is not set (./test.sh sets it when it can start a throwaway cluster: PostgreSQL's server binaries installed, Debian's postgresql package)"
        : null;

    /// <summary>The fresh database's address (<c>--database</c>).</summary>
    public string Address { get; }

    public string Name { get; }

    /// <summary>Creates a fresh database on the test server.</summary>
    public static TestPostgres Create()
    {
        string server = ServerAddress ?? throw new InvalidOperationException(SkipReason);
        string name = "flux_test_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        Execute(server, $"CREATE DATABASE {name};");
        return new TestPostgres(server, name);
    }

    /// <summary>Runs a statement on the test server's maintenance database.</summary>
    public static void Execute(string address, string sql)
    {
        using var connection = new NpgsqlConnection(PostgresPredictionStore.ConnectionSettings(address).ConnectionString);
        connection.Open();
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }

    /// <summary>Runs the server's control command with <paramref name="arguments"/> (<c>stop -m immediate</c>, <c>start</c>) and waits for it.</summary>
    public static void Control(string arguments)
    {
        string control = Environment.GetEnvironmentVariable(ControlVariable)
            ?? throw new InvalidOperationException($"{ControlVariable} is not set: the test cannot stop and start the PostgreSQL server.");
        using var process = Process.Start(new ProcessStartInfo("bash", ["-c", $"{control} {arguments}"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"pg_ctl {arguments} failed ({process.ExitCode}): {output}");
    }

    public void Dispose()
    {
        try
        {
            NpgsqlConnection.ClearAllPools();
            Execute(admin, $"DROP DATABASE IF EXISTS {Name} WITH (FORCE);");
        }
        catch (NpgsqlException)
        {
            // The server is down (a test stopped it and failed before starting it again): the cluster goes with the run.
        }
    }
}

/// <summary>A theory's PostgreSQL row (<paramref name="value"/>), skipped with the reason when there is no test server.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class PostgresDataAttribute : DataAttribute
{
    private readonly object value;

    public PostgresDataAttribute(object value)
    {
        this.value = value;
        Skip = TestPostgres.SkipReason;
    }

    public override IEnumerable<object[]> GetData(System.Reflection.MethodInfo testMethod) => [[value]];
}

/// <summary>A fact that needs the PostgreSQL test server: skipped with the reason when there is none.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        Skip = TestPostgres.SkipReason;
    }
}
