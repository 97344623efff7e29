import KurirCore
import KurirJSON

// The libFuzzer entry point (libFuzzer supplies `main`). The first byte picks what is fuzzed:
//   0…127   an MQTT request payload: JSON decoding, then validation (the daemon's intake path);
//   128…255 a gateway reply: the next byte picks the provider and HTTP status, the rest is the body,
//           decoded as JSON when it parses, then classified by that provider's dialect.
// Invariants are checked with `precondition`, so a violation is a crash libFuzzer keeps.

private let validator = RequestValidator(
    defaultCountryCode: "62", subscription: "notify/whatsapp/#", resultPrefix: "notify/result/whatsapp")
private let statuses = [200, 201, 204, 301, 400, 401, 404, 429, 500, 502, 503, 504]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if bytes[0] < 128 {
        fuzzRequest(Array(bytes.dropFirst()))
    } else if size > 1 {
        fuzzReply(selector: bytes[1], body: Array(bytes.dropFirst(2)))
    }
    return 0
}

private func fuzzRequest(_ payload: [UInt8]) {
    let decoded: Result<JSONValue, JSONParseFailure>
    do {
        decoded = .success(try JSONCodec.decode(payload))
    } catch {
        precondition(!error.description.contains("\n"), "decode error spans lines")
        decoded = .failure(JSONParseFailure(error.description))
    }
    switch validator.validate(topic: "notify/whatsapp/fuzz", payloadSize: payload.count, decoded: decoded) {
    case .accepted(let request):
        precondition(payload.count <= RequestValidator.maxPayloadBytes)
        precondition(!request.targets.isEmpty && request.targets.count <= RequestValidator.maxTargets)
        precondition(request.message.unicodeScalars.count <= RequestValidator.maxMessageCharacters)
        for target in request.targets {
            // Nothing but one clean number or group id may reach a gateway.
            if target.isGroup {
                precondition(TargetNormaliser.isGroupID(target.value))
            } else {
                precondition((8...15).contains(target.value.utf8.count))
                precondition(target.value.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 })
            }
        }
        // What kurir stores and re-encodes must survive a round trip.
        if case .success(let value) = decoded {
            let again = try? JSONCodec.decode(JSONCodec.encode(value))
            precondition(again == value, "encode/decode round trip changed the value")
        }
    case .rejected(let reason, _):
        precondition(!reason.isEmpty && !reason.contains("\n") && !reason.contains("\r"), "reason is not one line")
        precondition(!reason.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }, "control character in reason")
    }
}

private func fuzzReply(selector: UInt8, body: [UInt8]) {
    let provider = [Provider.fonnte, .wablas, .woowa][Int(selector) % 3]
    let status = statuses[Int(selector / 3) % statuses.count]
    let json = try? JSONCodec.decode(body)
    let result = Dialect.classify(
        provider: provider, reply: .answered(status: status, body: body, json: json, truncated: false), latencyMs: 1)
    if result.outcome == .accepted {
        // Accepted only on a JSON success body, never on an error status or a refusal.
        precondition(json != nil, "accepted a non-JSON body")
        precondition((200...299).contains(status), "accepted HTTP \(status)")
    }
    if let error = result.error {
        precondition(!error.contains("\n") && !error.contains("\r"), "error is not one line")
    }
}

// The entry-point shim: SwiftPM links an executable's `main` to `<module>_main`, so that symbol hands
// control to libFuzzer's driver with the callback above.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
) -> Int32

@_cdecl("kurir_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments) { data, size in fuzzOne(data, size) }
}
