// The softphone bar's own words (labels, states) in zh / en / vi. Failure texts come from the
// SDK's message table (src/messages.js) so the bar and the SDK never word a failure twice.

const UI = {
  title: { zh: '软电话', en: 'Softphone', vi: 'Điện thoại' },
  extension: { zh: '分机号', en: 'Extension', vi: 'Số máy nhánh' },
  password: { zh: '密码', en: 'Password', vi: 'Mật khẩu' },
  remember: { zh: '记住我（保存在本浏览器）', en: 'Remember me (stored in this browser)', vi: 'Ghi nhớ (lưu trên trình duyệt này)' },
  login: { zh: '登录', en: 'Log in', vi: 'Đăng nhập' },
  logout: { zh: '退出', en: 'Log out', vi: 'Đăng xuất' },
  connecting: { zh: '连接中…', en: 'Connecting…', vi: 'Đang kết nối…' },
  connected: { zh: '已连接', en: 'Connected', vi: 'Đã kết nối' },
  registered: { zh: '已注册', en: 'Registered', vi: 'Đã đăng ký' },
  notRegistered: { zh: '已连接（未注册，无法接听来电）', en: 'Connected (not registered: no inbound calls)', vi: 'Đã kết nối (chưa đăng ký: không nhận cuộc gọi đến)' },
  reconnecting: { zh: '网络中断，正在重连…', en: 'Connection lost, reconnecting…', vi: 'Mất kết nối, đang kết nối lại…' },
  disconnected: { zh: '未连接', en: 'Disconnected', vi: 'Mất kết nối' },
  numberPlaceholder: { zh: '输入号码', en: 'Number to call', vi: 'Nhập số cần gọi' },
  call: { zh: '呼叫', en: 'Call', vi: 'Gọi' },
  hangup: { zh: '挂断', en: 'Hang up', vi: 'Kết thúc' },
  answer: { zh: '接听', en: 'Answer', vi: 'Trả lời' },
  reject: { zh: '拒接', en: 'Reject', vi: 'Từ chối' },
  hold: { zh: '保持', en: 'Hold', vi: 'Giữ máy' },
  resume: { zh: '恢复', en: 'Resume', vi: 'Tiếp tục' },
  mute: { zh: '静音', en: 'Mute', vi: 'Tắt tiếng' },
  unmute: { zh: '取消静音', en: 'Unmute', vi: 'Bật tiếng' },
  transfer: { zh: '转接', en: 'Transfer', vi: 'Chuyển' },
  transferTo: { zh: '转接到号码', en: 'Transfer to', vi: 'Chuyển tới số' },
  calling: { zh: '呼叫中…', en: 'Calling…', vi: 'Đang gọi…' },
  ringing: { zh: '对方振铃中…', en: 'Ringing…', vi: 'Đang đổ chuông…' },
  earlyMedia: { zh: '对方放音中…', en: 'Playing announcement…', vi: 'Đang phát thông báo…' },
  inCall: { zh: '通话中', en: 'In call', vi: 'Đang đàm thoại' },
  onHold: { zh: '保持中', en: 'On hold', vi: 'Đang giữ máy' },
  muted: { zh: '已静音', en: 'Muted', vi: 'Đã tắt tiếng' },
  incomingCall: { zh: '来电', en: 'Incoming call', vi: 'Cuộc gọi đến' },
  micCheck: { zh: '麦克风测试', en: 'Test microphone', vi: 'Kiểm tra micro' },
  micSpeak: { zh: '请说话…', en: 'Speak now…', vi: 'Hãy nói…' },
  micOk: { zh: '麦克风正常', en: 'Microphone works', vi: 'Micro hoạt động tốt' },
  micSilent: { zh: '没有检测到声音', en: 'No sound detected', vi: 'Không nhận được âm thanh' },
  microphone: { zh: '麦克风', en: 'Microphone', vi: 'Micro' },
  defaultDevice: { zh: '系统默认', en: 'System default', vi: 'Mặc định hệ thống' },
  network: { zh: '网络质量', en: 'Network quality', vi: 'Chất lượng mạng' },
  language: { zh: '语言', en: 'Language', vi: 'Ngôn ngữ' },
  message: { zh: '消息', en: 'Message', vi: 'Tin nhắn' },
};

/** The words of the bar in `lang`, as an object of strings. */
export function uiStrings(lang) {
  const out = {};
  for (const [key, entry] of Object.entries(UI)) out[key] = entry[lang] || entry.en;
  return out;
}

/** Every key, for the completeness test. */
export function uiKeys() {
  return Object.keys(UI);
}

/** The raw entry of one key (the test checks every language is present). */
export function uiEntry(key) {
  return UI[key];
}
