using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace FluxNative.Server;

/// <summary>
/// Where a webhook may be sent: not to this machine or its networks (against server-side request forgery). A target is
/// refused when its host is a name that only means an inside host (<c>localhost</c>, <c>*.localhost</c>, <c>*.local</c>,
/// <c>*.internal</c>, with or without the trailing dot), or an address in a refused range (<see cref="IsInside"/>), or a
/// name that resolves to one. It is checked when the prediction is created and again on the addresses actually
/// connected to, so a name that changes its answer between the two (DNS rebinding) is still refused.
/// </summary>
internal sealed class WebhookTargets
{
    /// <summary>How long the create-time lookup of a webhook's host may take; an unanswered lookup leaves the check to connect time.</summary>
    public static readonly TimeSpan CreateLookupTimeout = TimeSpan.FromSeconds(2);

    private readonly bool allowPrivate;
    private readonly Func<string, CancellationToken, Task<IPAddress[]>> resolve;

    /// <param name="options">The server's settings (<see cref="FluxServerOptions.AllowPrivateWebhookTargets"/>).</param>
    /// <param name="resolve">Resolves a host name (default: the system's DNS); tests give their own.</param>
    public WebhookTargets(FluxServerOptions options, Func<string, CancellationToken, Task<IPAddress[]>>? resolve = null)
    {
        allowPrivate = options.AllowPrivateWebhookTargets;
        this.resolve = resolve ?? ((host, cancellationToken) => Dns.GetHostAddressesAsync(host, cancellationToken));
    }

    /// <summary>
    /// Checks a webhook URL when a prediction is created: absolute http(s), and (unless private targets are allowed) not
    /// an inside host, literally or by what its name resolves to now. A 400 naming <paramref name="field"/> otherwise.
    /// </summary>
    public async Task CheckAsync(string url, string field, CancellationToken cancellationToken)
    {
        if (url.Length > 2048 || !Uri.TryCreate(url, UriKind.Absolute, out Uri? uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw ApiException.BadRequest($"{field} must be an absolute http or https URL (got '{(url.Length > 100 ? url[..100] + "…" : url)}').", field);
        }

        if (allowPrivate)
        {
            return;
        }

        string host = Normalize(uri.IdnHost);
        string? refusal = RefusedName(host);
        if (refusal is null && !IPAddress.TryParse(host, out _))
        {
            // What the name points at now; a failed or slow lookup is not a refusal (the connect-time check still runs).
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(CreateLookupTimeout);
            try
            {
                refusal = RefusedAddresses(host, await resolve(host, timeout.Token).ConfigureAwait(false));
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or ArgumentException && !cancellationToken.IsCancellationRequested)
            {
                refusal = null;
            }
        }

        if (refusal is not null)
        {
            throw ApiException.BadRequest(
                $"{field} points at {refusal}; webhook targets on loopback, link-local or private addresses are refused unless the server allows them (--allow-private-webhooks).",
                field);
        }
    }

    /// <summary>The addresses to connect to for <paramref name="host"/>, all of them checked; throws <see cref="WebhookTargetRefusedException"/> when one is inside.</summary>
    public async Task<IPAddress[]> ResolveForConnectAsync(string host, CancellationToken cancellationToken)
    {
        string name = Normalize(host);
        if (!allowPrivate && RefusedName(name) is { } named)
        {
            throw new WebhookTargetRefusedException($"The webhook target is {named}: refused.");
        }

        IPAddress[] addresses = IPAddress.TryParse(name, out IPAddress? literal) ? [literal] : await resolve(name, cancellationToken).ConfigureAwait(false);
        if (!allowPrivate && RefusedAddresses(name, addresses) is { } resolved)
        {
            throw new WebhookTargetRefusedException($"The webhook target is {resolved}: refused.");
        }

        return addresses;
    }

    /// <summary>
    /// True for an address a webhook must not reach: loopback, unspecified, private, shared (100.64/10), link-local,
    /// multicast, reserved and documentation ranges, and IPv6 forms that carry such an IPv4 address (see <see cref="EmbeddedIPv4"/>).
    /// </summary>
    public static bool IsInside(IPAddress address)
    {
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            return IsInsideIPv4(address.GetAddressBytes());
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return true;   // nothing else is a webhook target
        }

        byte[] b = address.GetAddressBytes();
        if (b.AsSpan().IndexOfAnyExcept((byte)0) < 0 || address.Equals(IPAddress.IPv6Loopback))
        {
            return true;   // :: and ::1
        }

        foreach (uint v4 in EmbeddedIPv4(b))
        {
            var bytes = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, v4);
            if (IsInsideIPv4(bytes))
            {
                return true;
            }
        }

        return (b[0] & 0xFE) == 0xFC                                         // unique local fc00::/7
            || (b[0] == 0xFE && (b[1] & 0xC0) is 0x80 or 0xC0)              // link-local fe80::/10, site-local fec0::/10
            || b[0] == 0xFF                                                  // multicast ff00::/8
            || Prefix(b, [0x00, 0x64, 0xFF, 0x9B, 0x00, 0x01])              // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
            || Prefix(b, [0x01, 0x00, 0, 0, 0, 0, 0, 0])                    // discard-only 100::/64
            || Prefix(b, [0x20, 0x01, 0x0D, 0xB8]);                          // documentation 2001:db8::/32
    }

    /// <summary>
    /// The IPv4 addresses an IPv6 address carries, which a packet to it may reach: IPv4-mapped <c>::ffff:a.b.c.d</c>,
    /// IPv4-compatible <c>::a.b.c.d</c>, IPv4-translated <c>::ffff:0:a.b.c.d</c>, NAT64 <c>64:ff9b::a.b.c.d</c>, 6to4
    /// <c>2002:AABB:CCDD::</c>, and Teredo <c>2001:0:SERVER::CLIENT</c> (its server and its client, stored inverted).
    /// </summary>
    public static IEnumerable<uint> EmbeddedIPv4(byte[] b)
    {
        uint last = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(12));
        bool zero80 = b.AsSpan(0, 10).IndexOfAnyExcept((byte)0) < 0;
        if (zero80 && ((b[10] == 0xFF && b[11] == 0xFF) || (b[10] == 0 && b[11] == 0)))
        {
            yield return last;   // mapped ::ffff:0:0/96, compatible ::/96
        }

        if (Prefix(b, [0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]) || Prefix(b, [0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0]))
        {
            yield return last;   // translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96
        }

        if (b[0] == 0x20 && b[1] == 0x02)
        {
            yield return BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(2));   // 6to4 2002::/16
        }

        if (Prefix(b, [0x20, 0x01, 0x00, 0x00]))
        {
            yield return BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(4));   // Teredo server
            yield return ~last;                                               // Teredo client, obfuscated by inverting its bits
        }
    }

    /// <summary>A host as compared and looked up: lower case, without the trailing dot(s) of a fully qualified name.</summary>
    private static string Normalize(string host) => host.TrimEnd('.').ToLowerInvariant();

    /// <summary>Why a host name is refused by itself (names that only ever mean an inside host), or null.</summary>
    private static string? RefusedName(string host)
    {
        if (IPAddress.TryParse(host, out IPAddress? literal))
        {
            return IsInside(literal) ? $"{literal} (an inside address)" : null;
        }

        string[] inside = ["localhost", "local", "internal", "home.arpa"];
        return host.Length == 0 || inside.Any(n => host == n || host.EndsWith("." + n, StringComparison.Ordinal))
            ? $"'{host}' (a name for an inside host)"
            : null;
    }

    private static string? RefusedAddresses(string host, IPAddress[] addresses) =>
        addresses.FirstOrDefault(IsInside) is { } inside ? $"'{host}', which resolves to {inside}" : null;

    private static bool IsInsideIPv4(byte[] b) =>
        b[0] is 0 or 10 or 127 or >= 224                       // "this" network, private, loopback, multicast, reserved, broadcast
        || (b[0] == 100 && b[1] is >= 64 and <= 127)           // shared address space (carrier-grade NAT)
        || (b[0] == 169 && b[1] == 254)                        // link-local (cloud metadata services)
        || (b[0] == 172 && b[1] is >= 16 and <= 31)            // private
        || (b[0] == 192 && b[1] == 168)                        // private
        || (b[0] == 192 && b[1] == 0 && b[2] is 0 or 2)        // IETF protocol assignments, documentation
        || (b[0] == 198 && b[1] is 18 or 19)                   // benchmarking
        || (b[0] == 198 && b[1] == 51 && b[2] == 100)          // documentation
        || (b[0] == 203 && b[1] == 0 && b[2] == 113);          // documentation

    private static bool Prefix(byte[] address, byte[] prefix) => address.AsSpan().StartsWith(prefix);
}

/// <summary>A webhook delivery refused because its target is inside (found at connect time).</summary>
internal sealed class WebhookTargetRefusedException(string message) : Exception(message);
