// pollstation reader sketch: Arduino Uno/Nano + MFRC522.
//
// Prints "Card UID: XX XX XX XX" (zero-padded, uppercase) once per
// presentation and "Card removed" when the card leaves. Reads lines from the
// host: "OK" = counted (green LED, one beep), "NO" = not counted (red LED,
// two beeps). 9600 8N1, CR LF line endings.
//
// Needs the MFRC522 library (miguelbalboa/rfid) from the library manager.

#include <SPI.h>
#include <MFRC522.h>

const uint8_t PIN_SS = 10;
const uint8_t PIN_RST = 9;
const uint8_t PIN_GREEN = 5;
const uint8_t PIN_RED = 6;
const uint8_t PIN_BUZZER = 7;
// A card not seen for this long has left the reader.
const unsigned long ABSENCE_MS = 300;

MFRC522 rfid(PIN_SS, PIN_RST);

byte current[10];
byte currentLen = 0;
unsigned long lastSeen = 0;

char line[16];
byte lineLen = 0;
unsigned long ledOffAt = 0;

void beep(byte times) {
  for (byte i = 0; i < times; i++) {
    digitalWrite(PIN_BUZZER, HIGH);
    delay(60);
    digitalWrite(PIN_BUZZER, LOW);
    if (i + 1 < times) delay(80);
  }
}

void feedback(bool counted) {
  digitalWrite(counted ? PIN_GREEN : PIN_RED, HIGH);
  digitalWrite(counted ? PIN_RED : PIN_GREEN, LOW);
  ledOffAt = millis() + 600;
  beep(counted ? 1 : 2);
}

void printUid(const byte *uid, byte len) {
  Serial.print(F("Card UID:"));
  for (byte i = 0; i < len; i++) {
    Serial.print(uid[i] < 0x10 ? " 0" : " ");
    Serial.print(uid[i], HEX);
  }
  Serial.print("\r\n");
}

void setup() {
  pinMode(PIN_GREEN, OUTPUT);
  pinMode(PIN_RED, OUTPUT);
  pinMode(PIN_BUZZER, OUTPUT);
  Serial.begin(9600);
  SPI.begin();
  rfid.PCD_Init();
  Serial.print(F("pollstation reader ready\r\n"));
}

void readHost() {
  while (Serial.available() > 0) {
    char c = Serial.read();
    if (c == '\r') continue;
    if (c == '\n') {
      line[lineLen] = 0;
      if (strcmp(line, "OK") == 0) feedback(true);
      else if (strcmp(line, "NO") == 0) feedback(false);
      lineLen = 0;
    } else if (lineLen < sizeof(line) - 1) {
      line[lineLen++] = c;
    }
  }
}

void loop() {
  readHost();
  if (ledOffAt != 0 && (long)(millis() - ledOffAt) >= 0) {
    digitalWrite(PIN_GREEN, LOW);
    digitalWrite(PIN_RED, LOW);
    ledOffAt = 0;
  }
  // Wake halted cards too (WUPA), so a card left on the reader keeps
  // answering and does not count as a new tap.
  byte atqa[2];
  byte atqaLen = sizeof(atqa);
  bool present = false;
  if (rfid.PICC_WakeupA(atqa, &atqaLen) == MFRC522::STATUS_OK && rfid.PICC_ReadCardSerial()) {
    present = true;
    byte len = rfid.uid.size;
    bool same = len == currentLen && memcmp(rfid.uid.uidByte, current, len) == 0;
    if (!same || millis() - lastSeen > ABSENCE_MS) {
      memcpy(current, rfid.uid.uidByte, len);
      currentLen = len;
      printUid(current, len);
    }
    lastSeen = millis();
    rfid.PICC_HaltA();
  }
  if (!present && currentLen > 0 && millis() - lastSeen > ABSENCE_MS) {
    currentLen = 0;
    Serial.print(F("Card removed\r\n"));
  }
  delay(50);
}
