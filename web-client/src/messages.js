// The one table of human-readable messages (zh / en / vi) for everything the SDK reports:
// callgate's `call_ended` causes and SIP statuses, its `error` codes, and the SDK's own
// misuse and microphone errors. Keyed by callgate's stable identifiers, never by its English
// `message` text (docs/protocol.md: "Branch on `code`, never on `message`").

/** Languages the table covers. */
export const LANGUAGES = ['zh', 'en', 'vi'];

const TEXT = {
  // SIP final statuses of an outbound call (the seed's outbound error-code table).
  sip_403: {
    zh: '该号码未开通或不允许拨打（403）',
    en: 'This number is not paid for or not allowed (403)',
    vi: 'Đầu số này chưa được thanh toán cước',
  },
  sip_404: {
    zh: '无法接通该号码（404）',
    en: 'The number cannot be reached (404)',
    vi: 'Không kết nối được đến số thuê bao',
  },
  sip_408: {
    zh: '对方无人接听或发生错误（408）',
    en: 'No answer, or an error occurred (408)',
    vi: 'Khách hàng không nghe máy hoặc có lỗi xảy ra',
  },
  sip_480: {
    zh: '对方暂时无法接通（480）',
    en: 'The customer is temporarily unavailable (480)',
    vi: 'Thuê bao khách hàng tạm thời không liên lạc được',
  },
  sip_486: {
    zh: '对方忙（486）',
    en: 'The customer is busy (486)',
    vi: 'Khách hàng đang bận',
  },
  sip_487: {
    zh: '对方未接听（487）',
    en: 'The customer did not answer (487)',
    vi: 'Khách hàng không nghe máy',
  },
  sip_603: {
    zh: '对方拒接（603）',
    en: 'The customer declined the call (603)',
    vi: 'Khách hàng từ chối cuộc gọi',
  },
  sip_484: {
    zh: '号码不完整或格式错误',
    en: 'The number is incomplete or invalid',
    vi: 'Số điện thoại không đầy đủ hoặc không hợp lệ',
  },
  sip_488: {
    zh: '媒体协商失败（编解码不兼容）',
    en: 'The call could not agree on audio codecs',
    vi: 'Không thương lượng được định dạng âm thanh',
  },
  sip_5xx: {
    zh: '交换机错误，请稍后再试',
    en: 'The phone system reported an error; try again later',
    vi: 'Tổng đài gặp lỗi, vui lòng thử lại sau',
  },
  // The seed table's non-SIP rows.
  agent_busy: {
    zh: '坐席忙：已有通话进行中，请先结束当前通话',
    en: 'Agent busy: finish the current call first',
    vi: 'Tư vấn viên đang bận. Vui lòng kết thúc cuộc gọi hiện tại để tiếp tục.',
  },
  no_permission: {
    zh: '没有外呼权限，请联系管理员配置',
    en: 'No permission to call out; ask your administrator',
    vi: 'Không có quyền gọi ra. Liên hệ Admin để cấu hình',
  },
  agent_unreachable: {
    zh: '无法连接坐席的话机，请检查网络和软电话',
    en: "Cannot reach the agent's phone; check the network and the softphone",
    vi: 'Không thể kết nối được đến thiết bị nghe gọi của tư vấn viên, kiểm tra lại IP Phone/SoftPhone và đường truyền Internet',
  },
  other: { zh: '发生错误', en: 'An error occurred', vi: 'Có lỗi xảy ra' },
  // Other call_ended causes.
  normal_clearing: { zh: '通话结束', en: 'Call ended', vi: 'Cuộc gọi đã kết thúc' },
  transferred: { zh: '通话已转接', en: 'Call transferred', vi: 'Cuộc gọi đã được chuyển' },
  cancelled: { zh: '已取消呼叫', en: 'Call cancelled', vi: 'Đã hủy cuộc gọi' },
  pbx_unreachable: {
    zh: '无法连接交换机',
    en: 'The phone system cannot be reached',
    vi: 'Không kết nối được tới tổng đài',
  },
  srtp_required: {
    zh: '交换机不支持加密语音 (SRTP)',
    en: 'The phone system did not accept encrypted audio (SRTP)',
    vi: 'Tổng đài không chấp nhận âm thanh mã hóa (SRTP)',
  },
  media_timeout: {
    zh: '通话中断：长时间没有收到语音',
    en: 'The call dropped: no audio was received for too long',
    vi: 'Cuộc gọi bị ngắt do không nhận được âm thanh',
  },
  shutdown: {
    zh: '网关正在关闭，请稍后重试',
    en: 'The gateway is shutting down; try again shortly',
    vi: 'Cổng kết nối đang tắt, vui lòng thử lại sau',
  },
  // callgate error codes that need their own words.
  login_failed: {
    zh: '登录失败：分机号或密码无效',
    en: 'Login failed: extension or password invalid',
    vi: 'Đăng nhập thất bại: số máy nhánh hoặc mật khẩu không hợp lệ',
  },
  protocol_mismatch: {
    zh: '网关不支持此请求，请升级 SDK 或网关',
    en: 'The gateway does not support this request; update the SDK or callgate',
    vi: 'Cổng kết nối không hỗ trợ yêu cầu này; hãy cập nhật SDK hoặc callgate',
  },
  invalid_number: {
    zh: '号码无效',
    en: 'The number is invalid',
    vi: 'Số điện thoại không hợp lệ',
  },
  invalid_header: {
    zh: '扩展参数无效',
    en: 'An extra call parameter is invalid',
    vi: 'Tham số bổ sung của cuộc gọi không hợp lệ',
  },
  media_setup_failed: {
    zh: '浏览器音频协商失败',
    en: "The browser's audio could not be set up",
    vi: 'Không thiết lập được âm thanh của trình duyệt',
  },
  unknown_call: {
    zh: '通话不存在或已结束',
    en: 'The call does not exist or has ended',
    vi: 'Cuộc gọi không tồn tại hoặc đã kết thúc',
  },
  invalid_state: {
    zh: '当前通话状态不允许此操作',
    en: 'This action does not fit the call state',
    vi: 'Thao tác không phù hợp với trạng thái cuộc gọi',
  },
  invalid_dtmf: {
    zh: '按键无效：只允许 0-9 * # A-D',
    en: 'Invalid keys: only 0-9 * # A-D are allowed',
    vi: 'Phím không hợp lệ: chỉ cho phép 0-9 * # A-D',
  },
  pbx_refused: {
    zh: '交换机拒绝了该请求',
    en: 'The phone system refused the request',
    vi: 'Tổng đài từ chối yêu cầu',
  },
  request_timeout: {
    zh: '网关没有响应，请稍后再试',
    en: 'callgate did not answer in time; try again',
    vi: 'Cổng kết nối không phản hồi kịp, vui lòng thử lại',
  },
  overloaded: {
    zh: '网关繁忙，请稍后再试',
    en: 'The gateway is busy; try again shortly',
    vi: 'Cổng kết nối đang quá tải, vui lòng thử lại sau',
  },
  rate_limited: {
    zh: '拨打过于频繁，请稍后再试',
    en: 'Too many calls in a short time; wait a moment and try again',
    vi: 'Gọi quá nhiều lần trong thời gian ngắn, vui lòng thử lại sau',
  },
  number_not_allowed: {
    zh: '您无权拨打该号码',
    en: 'You are not allowed to call this number',
    vi: 'Bạn không được phép gọi đến số này',
  },
  // The SDK's own checks (misuse never throws: it becomes an ERROR event with one of these).
  not_connected: {
    zh: '尚未连接网关，请稍候',
    en: 'Not connected to the gateway yet',
    vi: 'Chưa kết nối tới cổng kết nối',
  },
  call_in_progress: {
    zh: '当前通话尚未结束，无法发起新通话',
    en: 'A call is already in progress',
    vi: 'Đang có cuộc gọi, không thể gọi thêm',
  },
  no_ringing_call: {
    zh: '没有可接听的来电',
    en: 'There is no ringing call to answer',
    vi: 'Không có cuộc gọi đến để trả lời',
  },
  no_active_call: {
    zh: '当前通话不存在或未接通，无法执行该操作',
    en: 'There is no answered call for this action',
    vi: 'Không có cuộc gọi đang diễn ra để thực hiện thao tác này',
  },
  no_call: {
    zh: '当前没有通话',
    en: 'There is no call',
    vi: 'Không có cuộc gọi nào',
  },
  already_held: { zh: '通话已保持', en: 'The call is already on hold', vi: 'Cuộc gọi đang được giữ' },
  not_held: { zh: '通话未保持', en: 'The call is not on hold', vi: 'Cuộc gọi không ở trạng thái giữ' },
  already_muted: { zh: '已静音', en: 'Already muted', vi: 'Đã tắt tiếng' },
  not_muted: { zh: '未静音', en: 'Not muted', vi: 'Chưa tắt tiếng' },
  not_registered: {
    zh: '尚未注册，操作禁止',
    en: 'Not registered',
    vi: 'Chưa đăng ký máy nhánh',
  },
  empty_target: {
    zh: '请输入号码',
    en: 'Enter a number',
    vi: 'Vui lòng nhập số',
  },
  extra_param_too_long: {
    zh: '扩展参数过长（最多 100 个字符）或含换行',
    en: 'An extra call parameter is longer than 100 characters or has a line break',
    vi: 'Tham số bổ sung dài quá 100 ký tự hoặc có xuống dòng',
  },
  empty_message: {
    zh: '消息内容为空',
    en: 'The message is empty',
    vi: 'Tin nhắn trống',
  },
  sdk_cleaned: {
    zh: 'SDK 已销毁，请重新初始化',
    en: 'This SipCall was cleaned up; create a new one',
    vi: 'SDK đã được hủy, hãy khởi tạo lại',
  },
  bad_config: {
    zh: '配置不完整：需要 host、extNo 以及 extPwd 或 token',
    en: 'Incomplete configuration: host, extNo and extPwd (or token) are required',
    vi: 'Cấu hình thiếu: cần host, extNo và extPwd (hoặc token)',
  },
  session_replaced: {
    zh: '该坐席已在另一个页面或设备上连接，本页面已断开',
    en: 'This agent connected from another page or device; this page is now offline',
    vi: 'Máy nhánh này đã kết nối từ trang hoặc thiết bị khác; trang này đã ngắt kết nối',
  },
  token_unsupported: {
    zh: '该网关未启用 token 登录，请改用 extPwd 或联系管理员',
    en: 'This callgate does not accept token login; use extPwd or ask your administrator',
    vi: 'Cổng kết nối này chưa bật đăng nhập bằng token; hãy dùng extPwd hoặc liên hệ Admin',
  },
  token_invalid: {
    zh: '登录失败：登录令牌无效',
    en: 'Login failed: the login token is invalid',
    vi: 'Đăng nhập thất bại: mã đăng nhập (token) không hợp lệ',
  },
  token_expired: {
    zh: '登录令牌已过期，请重新获取',
    en: 'The login token has expired; get a fresh one',
    vi: 'Mã đăng nhập (token) đã hết hạn, hãy lấy mã mới',
  },
  token_replayed: {
    zh: '该登录令牌已使用过，请重新获取',
    en: 'This login token was already used; get a fresh one',
    vi: 'Mã đăng nhập (token) này đã được dùng, hãy lấy mã mới',
  },
  token_fetch_failed: {
    zh: '无法获取新的登录令牌，请检查与CRM的连接',
    en: 'Could not get a fresh login token from the CRM',
    vi: 'Không lấy được mã đăng nhập (token) mới từ CRM',
  },
  token_mismatch: {
    zh: '新的登录令牌属于另一个分机，会话保留原令牌',
    en: 'The new login token is for another extension; the session keeps its current token',
    vi: 'Mã đăng nhập (token) mới thuộc về máy nhánh khác, phiên giữ mã hiện tại',
  },
  auth_mode_disabled: {
    zh: '该网关不接受此登录方式，请联系管理员',
    en: 'This callgate does not accept this kind of login; ask your administrator',
    vi: 'Cổng kết nối không chấp nhận cách đăng nhập này, hãy liên hệ Admin',
  },
  credentials_unavailable: {
    zh: '暂时无法获取分机凭据，正在重试',
    en: 'The extension credentials cannot be fetched right now; retrying',
    vi: 'Tạm thời không lấy được thông tin máy nhánh, đang thử lại',
  },
  register_failed: {
    zh: '注册失败',
    en: 'Registration failed',
    vi: 'Đăng ký thất bại',
  },
  transfer_failed: {
    zh: '转接失败',
    en: 'The transfer failed',
    vi: 'Chuyển cuộc gọi thất bại',
  },
  // Microphone (MIC_ERROR).
  mic_denied: {
    zh: '麦克风权限被禁用，请设置允许使用麦克风',
    en: 'Microphone access is blocked; allow it in the browser',
    vi: 'Quyền dùng micro bị chặn, hãy cho phép trong trình duyệt',
  },
  mic_missing: {
    zh: '未检测到麦克风，请检查麦克风是否插好',
    en: 'No microphone found; check that one is plugged in',
    vi: 'Không tìm thấy micro, hãy kiểm tra micro đã được cắm',
  },
  mic_unavailable: {
    zh: '麦克风检测异常，请检查是否在 HTTPS 站点、麦克风是否被占用',
    en: 'The microphone cannot be used (HTTPS page? in use by another app?)',
    vi: 'Không dùng được micro (trang có HTTPS không? micro đang bị ứng dụng khác dùng?)',
  },
};

/** The callgate `call_ended.cause` values (docs/protocol.md) and the entry that words each. */
export const CAUSE_KEYS = {
  transferred: 'transferred',
  normal_clearing: 'normal_clearing',
  cancelled: 'cancelled',
  busy: 'sip_486',
  declined: 'sip_603',
  unavailable: 'sip_480',
  no_answer: 'sip_487',
  not_found: 'sip_404',
  forbidden: 'sip_403',
  auth_failed: 'no_permission',
  invalid_number: 'sip_484',
  incompatible_media: 'sip_488',
  srtp_required: 'srtp_required',
  timeout: 'sip_408',
  server_error: 'sip_5xx',
  sip_error: 'other',
  unreachable: 'pbx_unreachable',
  media_timeout: 'media_timeout',
  media_failed: 'agent_unreachable',
  websocket_closed: 'agent_unreachable',
  shutdown: 'shutdown',
  internal: 'other',
};

/** The callgate `error.code` values (signaling::ErrorCode) and the entry that words each. */
export const ERROR_CODE_KEYS = {
  bad_json: 'protocol_mismatch',
  unknown_type: 'protocol_mismatch',
  invalid_message: 'protocol_mismatch',
  message_too_large: 'protocol_mismatch',
  binary_not_supported: 'protocol_mismatch',
  unsupported_protocol: 'protocol_mismatch',
  not_authenticated: 'not_connected',
  already_authenticated: 'protocol_mismatch',
  auth_failed: 'login_failed',
  token_expired: 'token_expired',
  token_replayed: 'token_replayed',
  token_mismatch: 'token_mismatch',
  auth_mode_disabled: 'auth_mode_disabled',
  credentials_unavailable: 'credentials_unavailable',
  invalid_number: 'invalid_number',
  invalid_header: 'invalid_header',
  invalid_sdp: 'media_setup_failed',
  no_common_codec: 'media_setup_failed',
  unknown_call: 'unknown_call',
  invalid_state: 'invalid_state',
  invalid_dtmf: 'invalid_dtmf',
  too_many_calls: 'agent_busy',
  rate_limited: 'rate_limited',
  number_not_allowed: 'number_not_allowed',
  overloaded: 'overloaded',
  shutting_down: 'shutdown',
  pbx_refused: 'pbx_refused',
  internal: 'other',
};

/** Codes the SDK gives requests that never got callgate's reply (see connection.js). */
export const LOCAL_ERROR_KEYS = {
  not_connected: 'not_connected',
  timeout: 'request_timeout',
  session_replaced: 'session_replaced',
};

/** SIP statuses with their own entry; other 5xx use `sip_5xx`, the rest `other`. */
const SIP_KEYS = {
  401: 'no_permission',
  403: 'sip_403',
  404: 'sip_404',
  407: 'no_permission',
  408: 'sip_408',
  480: 'sip_480',
  484: 'sip_484',
  485: 'sip_484',
  486: 'sip_486',
  487: 'sip_487',
  488: 'sip_488',
  600: 'sip_486',
  603: 'sip_603',
  604: 'sip_404',
  606: 'sip_488',
};

/**
 * Picks the language to speak: the configured one when the table has it, otherwise the
 * browser's, otherwise English. Lets integrators pass `navigator.language` unfiltered.
 */
export function pickLanguage(wanted, fallbackLocale) {
  for (const candidate of [wanted, fallbackLocale]) {
    const short = String(candidate || '').slice(0, 2).toLowerCase();
    if (LANGUAGES.includes(short)) return short;
  }
  return 'en';
}

/** Words one table entry in `lang`; unknown keys fall back to "other" so no event lacks text. */
export function text(key, lang = 'en') {
  const entry = TEXT[key] || TEXT.other;
  return entry[lang] || entry.en;
}

/**
 * The table entry for a failure, preferring the most specific identifier: the error code of
 * a refused request, then the SIP status, then the callgate cause. Exported so CRMs can word
 * their own reports the same way.
 */
export function messageKey({ errorCode, sipStatus, cause, endedBy } = {}) {
  if (errorCode && ERROR_CODE_KEYS[errorCode]) return ERROR_CODE_KEYS[errorCode];
  if (errorCode && LOCAL_ERROR_KEYS[errorCode]) return LOCAL_ERROR_KEYS[errorCode];
  // Not failures: the status that came with them (e.g. 487 after the agent's CANCEL) would
  // misword them as the customer's doing.
  if (cause === 'normal_clearing' || cause === 'transferred') return CAUSE_KEYS[cause];
  if (cause === 'cancelled' && endedBy === 'agent') return 'cancelled';
  if (sipStatus && SIP_KEYS[sipStatus]) return SIP_KEYS[sipStatus];
  if (cause && CAUSE_KEYS[cause]) return CAUSE_KEYS[cause];
  if (sipStatus >= 500 && sipStatus < 600) return 'sip_5xx';
  return 'other';
}

/** Localized text for a failure (see messageKey); what CALL_END.msg and ERROR.msg carry. */
export function describe(failure, lang = 'en') {
  return text(messageKey(failure), lang);
}

/** Every entry key, for the completeness test. */
export function allKeys() {
  return Object.keys(TEXT);
}
