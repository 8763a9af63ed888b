using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace FluxNative.Server.Tests;

/// <summary>
/// Where webhooks may not go: every form of an inside address (IPv6 that carries IPv4, names that mean this host, names
/// that resolve inside), at create time and at connect time; redirects are not followed nor retried; deliveries on
/// the wire are capped.
/// </summary>
public sealed class WebhookTargetsTests
{
    /// <summary>A resolver with fixed answers (no network): a name not listed does not resolve.</summary>
    private static readonly Dictionary<string, string[]> Names = new()
    {
        ["public.example"] = ["93.184.216.34"],
        ["rebind.example"] = ["10.0.0.5"],
        ["metadata.example"] = ["169.254.169.254"],
        ["mixed.example"] = ["93.184.216.34", "127.0.0.1"],
        ["mapped.example"] = ["::ffff:192.168.1.1"],
        ["nat64.example"] = ["64:ff9b::a00:1"],
    };

    [Theory]
    [InlineData("::ffff:127.0.0.1")]          // IPv4-mapped
    [InlineData("::ffff:10.1.2.3")]
    [InlineData("::127.0.0.1")]               // IPv4-compatible
    [InlineData("::a9fe:a9fe")]               // IPv4-compatible 169.254.169.254
    [InlineData("::ffff:0:7f00:1")]           // IPv4-translated (SIIT) 127.0.0.1
    [InlineData("64:ff9b::127.0.0.1")]        // NAT64
    [InlineData("64:ff9b::a9fe:a9fe")]        // NAT64 169.254.169.254
    [InlineData("64:ff9b:1::1")]              // local-use NAT64
    [InlineData("2002:7f00:1::1")]            // 6to4 of 127.0.0.1
    [InlineData("2002:c0a8:101::")]           // 6to4 of 192.168.1.1
    [InlineData("2001:0:4136:e378:8000:63bf:80ff:fffe")]   // Teredo, client 127.0.0.1 (stored inverted)
    [InlineData("2001:0:4136:e378::f5ff:fffe")]            // Teredo, client 10.0.0.1
    [InlineData("2001:0:a00:1::f7f7:f7f7")]                // Teredo, server 10.0.0.1
    [InlineData("::")]
    [InlineData("::1")]
    [InlineData("fe80::1")]
    [InlineData("fec0::1")]
    [InlineData("fd12:3456::1")]
    [InlineData("ff02::1")]
    [InlineData("100::1")]
    [InlineData("2001:db8::1")]
    [InlineData("0.0.0.0")]
    [InlineData("127.0.0.1")]
    [InlineData("10.0.0.1")]
    [InlineData("100.64.0.1")]
    [InlineData("169.254.169.254")]
    [InlineData("172.16.0.1")]
    [InlineData("172.31.255.255")]
    [InlineData("192.168.0.1")]
    [InlineData("192.0.0.8")]
    [InlineData("198.18.0.1")]
    [InlineData("224.0.0.1")]
    [InlineData("255.255.255.255")]
    public void Inside_addresses_in_every_form_are_refused(string address) => Assert.True(WebhookTargets.IsInside(IPAddress.Parse(address)), address);

    [Theory]
    [InlineData("93.184.216.34")]
    [InlineData("8.8.8.8")]
    [InlineData("172.32.0.1")]
    [InlineData("100.128.0.1")]
    [InlineData("::ffff:8.8.8.8")]
    [InlineData("64:ff9b::808:808")]                     // NAT64 of 8.8.8.8
    [InlineData("2002:808:808::1")]                      // 6to4 of 8.8.8.8
    [InlineData("2001:0:4136:e378:8000:63bf:f7f7:f7f7")] // Teredo, public server and client 8.8.8.8
    [InlineData("2606:4700::1111")]
    public void Public_addresses_are_allowed(string address) => Assert.False(WebhookTargets.IsInside(IPAddress.Parse(address)), address);

    [Theory]
    [InlineData("http://localhost./hook")]
    [InlineData("http://LOCALHOST/hook")]
    [InlineData("http://api.localhost./hook")]
    [InlineData("http://printer.local/hook")]
    [InlineData("http://db.internal/hook")]
    [InlineData("http://router.home.arpa/hook")]
    [InlineData("http://127.1/hook")]
    [InlineData("http://2130706433/hook")]
    [InlineData("http://0x7f000001/hook")]
    [InlineData("http://0177.0.0.1/hook")]
    [InlineData("http://[::ffff:127.0.0.1]/hook")]
    [InlineData("http://[::127.0.0.1]/hook")]
    [InlineData("http://[64:ff9b::10.0.0.1]/hook")]
    [InlineData("http://[2002:a00:1::]/hook")]
    [InlineData("http://[fe80::1%25eth0]/hook")]
    [InlineData("https://rebind.example/hook")]
    [InlineData("https://rebind.example./hook")]
    [InlineData("https://metadata.example/latest")]
    [InlineData("https://mixed.example/hook")]
    [InlineData("https://mapped.example/hook")]
    [InlineData("https://nat64.example/hook")]
    public async Task Inside_targets_are_refused_when_the_prediction_is_created(string url)
    {
        var e = await Assert.ThrowsAsync<ApiException>(() => Targets().CheckAsync(url, "webhook", CancellationToken.None));
        Assert.Equal(StatusCodes.Status400BadRequest, e.Status);
        Assert.Equal("webhook", e.Field);
        Assert.Contains("loopback, link-local or private", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("https://public.example/hook")]
    [InlineData("https://public.example./hook")]
    [InlineData("https://unresolvable.example/hook")]   // no answer now: the connect-time check decides
    [InlineData("http://93.184.216.34:8080/hook")]
    [InlineData("http://[2606:4700::1111]/hook")]
    public async Task Public_targets_are_accepted(string url) => await Targets().CheckAsync(url, "webhook", CancellationToken.None);

    [Fact]
    public async Task Allowing_private_targets_allows_them()
    {
        var targets = new WebhookTargets(new FluxServerOptions { AllowPrivateWebhookTargets = true }, Resolve);
        await targets.CheckAsync("http://localhost./hook", "webhook", CancellationToken.None);
        Assert.Equal([IPAddress.Parse("10.0.0.5")], await targets.ResolveForConnectAsync("rebind.example", CancellationToken.None));
    }

    [Theory]
    [InlineData("localhost.")]
    [InlineData("rebind.example")]
    [InlineData("mixed.example")]
    [InlineData("::ffff:127.0.0.1")]
    [InlineData("64:ff9b::7f00:1")]
    public async Task Inside_targets_are_refused_at_connect_time(string host)
    {
        var e = await Assert.ThrowsAsync<WebhookTargetRefusedException>(() => Targets().ResolveForConnectAsync(host, CancellationToken.None));
        Assert.Contains("webhook target", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_create_through_the_api_names_the_webhook_field()
    {
        await using ServerHost server = await ServerHost.StartAsync(services: UseFakeDns);
        foreach (string url in new[] { "http://localhost./x", "http://[::ffff:127.0.0.1]/x", "https://rebind.example/x" })
        {
            Reply reply = await server.PostAsync("/v1/models/black-forest-labs/flux-dev/predictions",
                $$"""{"input":{{ServerHost.QuickInput}},"webhook":"{{url}}"}""");
            Assert.True((int)reply.Status is 400 or 422, reply.Text);
            reply.AssertError(reply.Status, "loopback, link-local or private", "webhook");
        }
    }

    [Fact]
    public async Task A_name_that_turns_inside_after_the_create_check_is_refused_at_connect()
    {
        await using var receiver = await WebhookReceiver.StartAsync(failFirst: 0);
        int lookups = 0;
        // The first answer (the create-time check) is public; every later one (connect time) is the receiver on loopback.
        Task<IPAddress[]> Rebinding(string host, CancellationToken _) =>
            Task.FromResult(Interlocked.Increment(ref lookups) == 1 ? [IPAddress.Parse("93.184.216.34")] : new[] { IPAddress.Loopback });
        await using ServerHost server = await ServerHost.StartAsync(
            o => o with { WebhookRetryDelay = TimeSpan.FromMilliseconds(20) },
            services: (services, options) => services.AddSingleton(new WebhookTargets(options, Rebinding)));
        int port = new Uri(receiver.Url).Port;
        string id = await server.CreateAsync(ServerHost.QuickInput, $$""","webhook":"http://rebind.example:{{port}}/hook" """);
        await server.WaitFinishedAsync(id);
        await server.App.Services.GetRequiredService<WebhookDispatcher>().DrainAsync(TimeSpan.FromSeconds(10));
        Assert.True(lookups >= 2, $"lookups: {lookups}");
        Assert.Empty(receiver.Deliveries);
    }

    [Fact]
    public async Task Redirects_are_not_followed_nor_retried()
    {
        await using var target = await WebhookReceiver.StartAsync(failFirst: 0);
        await using var redirecting = await WebhookReceiver.StartAsync(failFirst: 0, respond: context =>
        {
            context.Response.Headers.Location = $"{target.Url}/landed";
            return Task.FromResult<int?>(StatusCodes.Status307TemporaryRedirect);
        });
        await using ServerHost server = await ServerHost.StartAsync(o => o with { AllowPrivateWebhookTargets = true, WebhookRetryDelay = TimeSpan.FromMilliseconds(20) });
        WebhookDispatcher dispatcher = server.App.Services.GetRequiredService<WebhookDispatcher>();
        dispatcher.Send(View($"{redirecting.Url}/hook"), "completed", "{}");
        await dispatcher.DrainAsync(TimeSpan.FromSeconds(10));
        Assert.Single(redirecting.Deliveries);
        Assert.Empty(target.Deliveries);
    }

    [Fact]
    public async Task Deliveries_on_the_wire_are_capped()
    {
        int current = 0, most = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await WebhookReceiver.StartAsync(failFirst: 0, respond: async _ =>
        {
            int now = Interlocked.Increment(ref current);
            InterlockedMax(ref most, now);
            await release.Task.WaitAsync(TimeSpan.FromSeconds(20));
            Interlocked.Decrement(ref current);
            return 200;
        });
        await using ServerHost server = await ServerHost.StartAsync(o => o with { AllowPrivateWebhookTargets = true, WebhookMaxConcurrency = 2 });
        WebhookDispatcher dispatcher = server.App.Services.GetRequiredService<WebhookDispatcher>();
        for (int k = 0; k < 6; k++)
        {
            dispatcher.Send(View($"{slow.Url}/hook{k}"), "completed", "{}");
        }

        DateTime end = DateTime.UtcNow.AddSeconds(10);
        while (Volatile.Read(ref current) < 2 && DateTime.UtcNow < end)
        {
            await Task.Delay(10);
        }

        await Task.Delay(300);   // time for a third request to arrive, were it allowed
        Assert.Equal(2, Volatile.Read(ref most));
        release.SetResult();
        await dispatcher.DrainAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(6, slow.Deliveries.Length);
        Assert.Equal(2, most);
    }

    [Fact]
    public void The_cap_must_be_positive()
    {
        using var directory = new FluxNative.Testing.TempDirectory();
        var e = Assert.Throws<FluxServerConfigurationException>(() => FluxServer.Build(ServerHost.DefaultOptions(directory.Path) with { WebhookMaxConcurrency = 0 }));
        Assert.Contains("Concurrent webhook deliveries", e.Message, StringComparison.Ordinal);
    }

    private static WebhookTargets Targets() => new(new FluxServerOptions(), Resolve);

    private static Task<IPAddress[]> Resolve(string host, CancellationToken cancellationToken) =>
        Names.TryGetValue(host, out string[]? addresses)
            ? Task.FromResult(addresses.Select(IPAddress.Parse).ToArray())
            : Task.FromException<IPAddress[]>(new SocketException((int)SocketError.HostNotFound));

    private static void UseFakeDns(IServiceCollection services, FluxServerOptions options) => services.AddSingleton(new WebhookTargets(options, Resolve));

    private static PredictionView View(string webhook) => new()
    {
        Id = "abc",
        Kind = PredictionKind.Replicate,
        Model = "black-forest-labs/flux-dev",
        Status = PredictionStatus.Succeeded,
        Input = "{}",
        CreatedAt = DateTimeOffset.UtcNow,
        BaseUrl = "http://localhost",
        Webhook = webhook,
        WebhookEvents = WebhookDispatcher.Events,
    };

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
