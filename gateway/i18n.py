"""Error-message catalogue (en, vi, zh) and Accept-Language parsing, as the reference does it."""

from __future__ import annotations

SUPPORTED = ("en", "vi", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "error.unauthorized": "unauthorized",
        "error.invalid_auth": "invalid authentication",
        "error.permission_denied": "permission denied: insufficient role for {0}",
        "error.invalid_json": "invalid JSON",
        "error.invalid_request": "invalid request: {0}",
        "error.required": "{0} is required",
        "error.invalid_id": "invalid {0} ID",
        "error.not_found": "{0} not found: {1}",
        "error.already_exists": "{0} already exists: {1}",
        "error.invalid_slug": "{0} must be a valid slug (lowercase letters, numbers, hyphens only)",
        "error.user_id_header": "X-GoClaw-User-Id header is required",
        "error.invalid_user_id": "invalid X-GoClaw-User-Id header",
        "error.owner_only": "only owner can {0}",
        "error.no_access": "no access to this {0}",
        "error.internal": "internal error: {0}",
        "error.rate_limit": "rate limit exceeded — please wait",
        "error.no_user_message": "no user message found: send at least one non-empty user message",
        "error.agent_inactive": "agent {0} is {1}; activate it to chat",
        "error.method_not_allowed": "method not allowed",
        "error.route_not_found": "no such route: {0}",
        "error.not_implemented": "not implemented yet: {0}",
        "error.body_too_large": "request body too large (limit {0} bytes)",
        "error.database_unavailable": "database unavailable, try again shortly",
        "error.upstream": "upstream provider error: {0}",
        "error.upstream_timeout": "upstream provider timed out",
        "error.conflict": "{0}",
        # agents, providers
        "error.admin_only": "only an admin can {0}",
        "error.provider_in_use": "provider {0} is used by {1} agent(s): point them at another provider first",
        "error.provider_disabled": "provider {0} is disabled",
        "error.secret_unreadable": (
            "the stored API key of provider {0} cannot be decrypted (was GOCLAW_ENCRYPTION_KEY changed?); set it again"
        ),
        # channels, storage, media
        "error.invalid_path": "invalid path",
        "error.not_a_directory": "not a directory: {0}",
        "error.invalid_channel_type": "invalid channel_type",
        "error.channel_credentials": "{0} channels need these credentials: {1}",
        "error.channel_key_required": "channel and key are required",
        "error.missing_file_field": "missing 'file' field",
        "error.empty_file": "the uploaded file is empty",
        "error.file_too_large": "file too large (limit {0} bytes)",
        "error.range_not_satisfiable": "requested range not satisfiable (size {0} bytes)",
        # tools, MCP servers, skills
        "error.mcp": "{0}",
        "error.ssrf_refused": "{0} resolves to a private or reserved address (refused)",
        "error.skill_archive": "invalid skill archive: {0}",
        "error.skill_too_large": "skill archive too large: {0}",
        "error.secrets_unreadable": (
            "the stored {0} cannot be decrypted (was GOCLAW_ENCRYPTION_KEY changed?); set it again"
        ),
        # runs, WebSocket RPC
        "error.session_busy": (
            "session {0} is busy with run {1}: wait for it to finish, chat.abort it, or chat.inject the message"
        ),
        "error.run_aborted": "run {0} was aborted",
        "error.inbox_full": "session {0} already has {1} injected messages waiting",
        "error.ws_invalid_frame": "invalid frame: {0}",
        "error.ws_unexpected_frame": "unexpected frame type: {0}",
        "error.ws_malformed": "malformed request: {0}",
        "error.ws_connect_first": "first request must be 'connect'",
        "error.ws_unknown_method": "unknown method: {0}",
        "error.ws_token_required": "unauthorized: connect needs a token (the gateway token or an API key)",
        "error.ws_user_required": "user_id is required",
        "error.ws_too_many_runs": "too many concurrent runs on this connection (limit {0})",
    },
    "vi": {
        "error.unauthorized": "chưa xác thực",
        "error.invalid_auth": "xác thực không hợp lệ",
        "error.permission_denied": "không có quyền: vai trò không đủ cho {0}",
        "error.invalid_json": "JSON không hợp lệ",
        "error.invalid_request": "yêu cầu không hợp lệ: {0}",
        "error.required": "{0} là bắt buộc",
        "error.invalid_id": "ID {0} không hợp lệ",
        "error.not_found": "không tìm thấy {0}: {1}",
        "error.already_exists": "{0} đã tồn tại: {1}",
        "error.user_id_header": "cần header X-GoClaw-User-Id",
        "error.internal": "lỗi nội bộ: {0}",
        "error.rate_limit": "vượt quá giới hạn — vui lòng đợi",
        "error.method_not_allowed": "phương thức không được phép",
        "error.database_unavailable": "cơ sở dữ liệu không khả dụng, vui lòng thử lại",
        "error.invalid_path": "đường dẫn không hợp lệ",
    },
    "zh": {
        "error.unauthorized": "未授权",
        "error.invalid_auth": "身份验证无效",
        "error.permission_denied": "权限不足：{0} 需要更高的角色",
        "error.invalid_json": "无效的 JSON",
        "error.invalid_request": "无效的请求：{0}",
        "error.required": "{0} 是必填项",
        "error.invalid_id": "无效的 {0} ID",
        "error.not_found": "未找到 {0}：{1}",
        "error.already_exists": "{0} 已存在：{1}",
        "error.user_id_header": "需要 X-GoClaw-User-Id 请求头",
        "error.internal": "内部错误：{0}",
        "error.rate_limit": "超出速率限制，请稍候",
        "error.method_not_allowed": "不允许的方法",
        "error.database_unavailable": "数据库不可用，请稍后重试",
        "error.invalid_path": "无效的路径",
    },
}


def parse_accept_language(header: str | None) -> str:
    """First supported tag wins; q-values are ignored (reference rule); default en."""
    if not header:
        return "en"
    for part in header[:256].split(","):
        tag = part.split(";", 1)[0].strip()
        if tag in SUPPORTED:
            return tag
        if tag.startswith("en"):
            return "en"
        if tag[:2] in ("vi", "zh"):
            return tag[:2]
    return "en"


def translate(locale: str, key: str, *args: object) -> str:
    """Requested locale → English → the key itself."""
    template = MESSAGES.get(locale, {}).get(key) or MESSAGES["en"].get(key) or key
    try:
        return template.format(*args)
    except (IndexError, KeyError):
        return template
