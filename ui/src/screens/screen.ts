export interface Screen {
  readonly el: HTMLElement;
  show(): void;
  hide(): void;
}
